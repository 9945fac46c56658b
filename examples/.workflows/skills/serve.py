#!/usr/bin/env python3
"""Serves a directory on 127.0.0.1 on a free port; writes the port to a file once listening.
Used by the deployer skills; it runs in the background until the run ends (the engine ends
every process a run left behind)."""
import os, sys
from http.server import HTTPServer, SimpleHTTPRequestHandler

directory, port_file = sys.argv[1], sys.argv[2]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=directory, **k))
tmp = port_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_port))
os.replace(tmp, port_file)
server.serve_forever()
