"""The engine behind Triton Inference Server: the model repository (repository/), the code its Python
backend models share (serving.py), the client the GPU worker uses (client.py) and the server launcher
(server.py)."""
