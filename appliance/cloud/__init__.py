"""Fleet control: the device's WebSocket link to a fleet controller.

`protocol` parses the controller's JSON messages and encodes the device's; `lifecycle` is the sans-IO
state machine of the one cloud stream a device pushes. Neither does I/O or reads a clock.
"""
