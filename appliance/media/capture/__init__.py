"""Camera capture: sources (V4L2, Raspberry Pi camera, synthetic, file) -> encoder -> the camera's Bus.

Modules: `service` (the supervised child and its plan), `tracks` (the sink/track contract, clock, errors),
`worker` (threads <-> trio), `synthetic`, `file`, `devices` (V4L2, ALSA, rpicam-vid), `annexb` (encoder
and camera H.264 -> Bus packets), `timing` (device timestamps, keyframe rate limit). The encoders are in
`appliance.media.encode`, the encoder probe in `appliance.hw.encoders`, V4L2 discovery in `appliance.hw.v4l2`.
"""
