"""Web: the aiohttp application (auth, scope, errors in one place) and the OpenAPI document."""
