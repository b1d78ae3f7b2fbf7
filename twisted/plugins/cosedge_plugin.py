"""twistd discovery for `twistd cosedge`; nothing from `edge` is imported until it runs."""

from twisted.application.service import ServiceMaker

cosedge = ServiceMaker(
    "cosedge",
    "edge.process.tap",
    "Edge server for object-storage buckets with back-to-origin (302 + background copy).",
    "cosedge",
)
