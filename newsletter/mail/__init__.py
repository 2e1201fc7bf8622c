"""From a Digest to bytes on the wire: templates, rendering, MIME, DKIM, tokens and transports."""
