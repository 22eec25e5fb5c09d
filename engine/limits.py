"""Limits that several layers share and that must be readable without importing torch: the
`latent-atlas app` launcher passes the upload limit to the server before anything else loads.
"""

MAX_UPLOAD_MB = 200  # an uploaded file (dataset or run); also the server's --server.maxUploadSize
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
