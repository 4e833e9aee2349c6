"""The operator's station: ``lineclear serve`` -- the watch loop, the record, a web page and an OPC UA server.

==================== =================================================================================
module               what
==================== =================================================================================
:mod:`.service`      :class:`~.service.Station`: the watch loop in a thread, each set recorded, then told
                     to the listeners (the page's event stream, the OPC UA server)
:mod:`.record`       what a record row holds: the verdict document, image and overlay hashes, the bundle
:mod:`.shifts`       shift windows and the counts per shift (pure)
:mod:`.app`          the FastAPI app: the page, the JSON API, server-sent events, acknowledgements
:mod:`.opcua`        the OPC UA server (asyncua) with the nodes a PLC reads
``static/``          the page's HTML, JS and CSS (no CDN: the station works offline)
==================== =================================================================================

The record's file layout belongs to :mod:`lineclear.formats.record`.
"""
