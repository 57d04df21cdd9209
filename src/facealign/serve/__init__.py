"""`facealign serve`: an HTTP landmark service and web page (optional extras: `pip install facealign[serve]`).

`facealign.serve.app` needs FastAPI; `facealign.serve.inputs` and `facealign.serve.pool` do not.
"""
