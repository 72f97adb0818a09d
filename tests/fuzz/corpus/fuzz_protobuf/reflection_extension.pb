*$
google.protobuf.MethodOptions°Ê¼"