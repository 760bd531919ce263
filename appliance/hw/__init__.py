"""Board, camera and peripheral discovery (grown by the capture and hardware issues)."""
