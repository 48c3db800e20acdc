"""The custom resources: pydantic models (the source of truth) and the CRDs generated from them."""
