"""Run reelforge locally: real Redis and SeaweedFS child processes, the whole stack, and a small client."""
