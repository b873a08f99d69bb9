"""DICOMweb (PS3.18) for pacsnode: QIDO-RS, WADO-RS, STOW-RS, WADO-URI over HTTP (issue 14).

The only package that imports the web framework (Starlette, served by uvicorn). Every route
authenticates its caller into a typed ``Caller`` and then asks the same ``Node`` methods as
DIMSE (``find``, ``retrieve``, ``store_file``): one door, one matching engine, one store path.
"""
