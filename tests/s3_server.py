"""A local S3-compatible server for the tests: moto's S3 on 127.0.0.1, one request at a time
(as S3 applies conditional writes atomically). Prints ``ready PORT`` once it listens.

    python tests/s3_server.py [PORT]      (0: any free port)
"""

import sys

from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                           create_backend_app)
from werkzeug.serving import make_server

server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                     DomainDispatcherApplication(create_backend_app), threaded=False,
                     request_handler=MotoRequestHandler)
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()
