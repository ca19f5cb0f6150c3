"""One TLS handshake over a socket pair, with the contexts Patroni's REST API and its callers build.

Usage: tls_handshake.py CA SERVER_CERT SERVER_KEY SERVER_NAME CLIENT_CERT CLIENT_KEY

The server side is made as patroni/api.py makes it with restapi.verify_client: required
(ssl.create_default_context(Purpose.CLIENT_AUTH, cafile=CA), the pair, CERT_REQUIRED); the client
side verifies the server by SERVER_NAME (an address of its certificate) and presents its own pair.
Python 3.13's default contexts set VERIFY_X509_STRICT. Prints "ok", or each side's error and exits 1.
"""
import socket
import ssl
import sys
import threading

ca, server_cert, server_key, server_name, client_cert, client_key = sys.argv[1:7]

server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
server_ctx.load_cert_chain(certfile=server_cert, keyfile=server_key)
server_ctx.verify_mode = ssl.CERT_REQUIRED
client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
client_ctx.load_cert_chain(certfile=client_cert, keyfile=client_key)

left, right = socket.socketpair()
errors = {}


def serve():
    try:
        with server_ctx.wrap_socket(right, server_side=True) as s:
            s.sendall(b"x")
    except (ssl.SSLError, OSError) as e:
        errors["server"] = e


thread = threading.Thread(target=serve)
thread.start()
try:
    with client_ctx.wrap_socket(left, server_hostname=server_name) as c:
        c.recv(1)
except (ssl.SSLError, OSError) as e:
    errors["client"] = e
thread.join()
for side, e in sorted(errors.items()):
    print(f"{side}: {e}")
if errors:
    sys.exit(1)
print("ok")
