"""How objects become bytes and back: the frame format (``frames``), the codec of each
kind of object (``serialize``), signing and integrity digests of the frames, and the
huge-page buffers large payloads are read into (``hugepages``)."""
