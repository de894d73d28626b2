"""Reads one batch from Herald: python get_batch.py 127.0.0.1:50051 BATCH_ID [TOKEN]"""
import sys

import grpc
from herald.v1 import common_pb2, query_pb2, query_pb2_grpc

address, batch_id, token = sys.argv[1], sys.argv[2], (sys.argv[3:] or [""])[0]
with grpc.insecure_channel(address) as channel:
    queries = query_pb2_grpc.QueryServiceStub(channel)
    auth = [("authorization", f"Bearer {token}")] if token else []
    batch = queries.GetBatch(query_pb2.GetBatchRequest(batch_id=batch_id), metadata=auth)
    print(batch.batch_id, batch.cube_id, common_pb2.BatchState.Name(batch.state))
