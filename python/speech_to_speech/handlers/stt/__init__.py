"""Speech-to-text backends: one module each, found by the registry.

A backend is one module here whose handler class is decorated with
``speech_to_speech.handlers.registry.register``; modules starting with ``_``
are shared helpers, not backends.
"""
