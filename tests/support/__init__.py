"""Helpers the tests share: served services, images, upload cases, PostgreSQL, the real model.

Imported as `support.<module>` (pytest's pythonpath holds tests/).
"""
