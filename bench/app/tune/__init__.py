"""`python -m bench tune`: the best way to serve on this machine — replicas × threads × max batch, searched offline
and verified as a real service."""
