"""RTMP: sans-IO cores (handshake, chunk stream, AMF, session) and their trio drivers (server, client).

The cores import no trio, sockets or clocks; `server.py` and `client.py` drive them.
"""
