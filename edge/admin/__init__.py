"""`cosedge-admin`: the operator's command line, speaking the signed COS API to an edge."""
