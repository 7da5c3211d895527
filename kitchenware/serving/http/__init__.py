"""The HTTP edge: the upload, auth, CORS, request-id and admission gates; error bodies; docs."""
