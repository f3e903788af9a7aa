"""Online serving of vertical models: guest endpoint, host partial-result services, feature providers.

Import the submodules (`guest`, `host`, `providers`, `scoring`, `client`); FastAPI and uvicorn are
imported only by the REST app and the guest process.
"""

from __future__ import annotations

__all__: list[str] = []
