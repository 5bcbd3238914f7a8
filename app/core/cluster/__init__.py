"""Other machines: `camelid worker` (llama.cpp's RPC server) and the clients that use them.

probe.py speaks the protocol in pure Python (safe to call from the app), rpc.py
drives llama.cpp's RPC backend through ctypes, machines.py turns probed workers
into the fit engine's remote devices. Nothing is imported here, so importing the
package never loads llama.cpp.
"""
