#!/usr/bin/env python3
"""A real gRPC server and client (grpcio, no generated code) for the proxy's
gRPC tests.

    grpc_check.py serve PORT
        An insecure (h2c) server on 127.0.0.1:PORT with service test.Echo:
        Unary (the request reversed, trailing metadata x-trailer: done),
        Stream (three replies, then x-trailer: streamed), Fail (NOT_FOUND).
        Prints "ready" once it listens; runs until killed (at most 300 s).
    grpc_check.py call ADDR AUTHORITY [CA_FILE]
        Calls all three through ADDR (TLS with CA_FILE, else h2c) with
        AUTHORITY as :authority (and TLS name), prints one JSON object.
"""

import json
import sys
import time
from concurrent import futures

import grpc

IDENTITY = (lambda b: b, lambda b: b)


def serve(port):
    def unary(request, context):
        context.set_trailing_metadata((("x-trailer", "done"),))
        return request[::-1]

    def stream(request, context):
        for i in range(3):
            yield request + b"-%d" % i
        context.set_trailing_metadata((("x-trailer", "streamed"),))

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, *IDENTITY),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, *IDENTITY),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, *IDENTITY),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    time.sleep(300)


def call(addr, authority, ca=None):
    options = [("grpc.default_authority", authority)]
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options.append(("grpc.ssl_target_name_override", authority))
        channel = grpc.secure_channel(addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(addr, options=options)
    out = {}
    unary = channel.unary_unary("/test.Echo/Unary", *IDENTITY)
    reply, rpc = unary.with_call(b"hello", timeout=10)
    out["unary"] = reply.decode()
    out["unary_trailer"] = dict(rpc.trailing_metadata()).get("x-trailer")
    stream = channel.unary_stream("/test.Echo/Stream", *IDENTITY)(b"item", timeout=10)
    out["stream"] = [m.decode() for m in stream]
    out["stream_trailer"] = dict(stream.trailing_metadata()).get("x-trailer")
    try:
        channel.unary_unary("/test.Echo/Fail", *IDENTITY)(b"x", timeout=10)
        out["fail"] = "OK"
    except grpc.RpcError as e:
        out["fail"] = e.code().name
        out["fail_details"] = e.details()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        call(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
