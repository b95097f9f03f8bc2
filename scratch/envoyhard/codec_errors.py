import socket, sys
port = int(sys.argv[1])
for name, req in [("bad header name", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"),
                  ("bad version", b"GET /v1/models HTTP/1.7\r\nHost: x\r\n\r\n"),
                  ("huge header", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n"),
                  ("bad chunk", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")]:
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); s.settimeout(5); d = b""
    try:
        while (c := s.recv(4096)): d += c
    except Exception as e: d += repr(e).encode()
    print(name, "->", d[:160])
