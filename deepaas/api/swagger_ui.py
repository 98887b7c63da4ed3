"""The documents' routes: ``/swagger.json``, ``/openapi.json``, and the
Swagger UI at ``/api``, served from the ``swagger-ui-bundle`` package's own
assets (nothing fetched from a CDN: the UI works on an air-gapped node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from deepaas.api.metrics import label
from deepaas.api.openapi import TITLE, SpecBuilder
from deepaas.exceptions import DeepaasError, echoed

# -- Swagger UI from local assets ---------------------------------------------

try:
    from swagger_ui_bundle import swagger_ui_path as _bundle_path

    SWAGGER_UI_DIR: Path | None = Path(str(_bundle_path))
except ImportError:  # pragma: no cover - the dependency is declared
    SWAGGER_UI_DIR = None

UI_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{title}</title>
  <link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
  <p style="margin: 8px 20px 0; font-family: sans-serif; text-align: right">
    <a href="ui/trainings">Trainings dashboard</a>
  </p>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    // A list of files is an array of binary strings in Swagger 2.0 (which
    // has no array of files): Swagger UI shows a file input per item, then
    // refuses the files as "not a string". Let it send them.
    function FileArrays() {{
      function files(value) {{
        var items = value && value.toArray ? value.toArray() : value;
        return Array.isArray(items) && items.length > 0 &&
          items.every(function (item) {{ return item instanceof File; }});
      }}
      function validateParams(validate, system) {{
        return function (pathMethod, isOAS3) {{
          var result = validate(pathMethod, isOAS3);
          var params = system.getState().getIn(
            ["spec", "meta", "paths"].concat(pathMethod, ["parameters"]));
          if (params && params.every(function (meta) {{
            var errors = meta.get("errors");
            return !errors || !errors.size || files(meta.get("value"));
          }})) {{
            system.specActions.clearValidateParams(pathMethod);
          }}
          return result;
        }};
      }}
      var actions = {{validateParams: validateParams}};
      return {{statePlugins: {{spec: {{wrapActions: actions}}}}}};
    }}
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "{spec_url}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [FileArrays],
        layout: "StandaloneLayout",
        // Swagger 2.0 has no bearer scheme: its Authorize dialog sends the
        // Authorization header as typed. Add the "Bearer " a pasted token
        // lacks (docs/security.md).
        requestInterceptor: function (request) {{
          var headers = request.headers || {{}};
          var value = headers.Authorization;
          if (value && !/^bearer\\s/i.test(value)) {{
            headers.Authorization = "Bearer " + value.trim();
          }}
          return request;
        }}
      }});
    }};
  </script>
</body>
</html>
"""


def _docs(handler: Any) -> Any:
    return label(handler, "", "docs")  # open: the UI loads before Authorize


def add_docs_routes(app: web.Application, builder: SpecBuilder, docs: bool) -> None:
    """``/swagger.json`` and ``/openapi.json`` always; the UI when enabled."""
    bp = builder.base_path

    async def swagger_json(request: web.Request) -> web.Response:
        return web.json_response(builder.swagger())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(builder.openapi())

    app.router.add_get(f"{bp}/swagger.json", _docs(swagger_json), allow_head=False)
    app.router.add_get(f"{bp}/openapi.json", _docs(openapi_json), allow_head=False)
    if not docs:
        return

    page = UI_PAGE.format(
        title=TITLE, assets=f"{bp}/swagger-ui", spec_url=f"{bp}/swagger.json"
    )

    async def ui_page(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def ui_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{bp}/api")

    app.router.add_get(f"{bp}/api", _docs(ui_page), allow_head=False)
    app.router.add_get(f"{bp}/ui", _docs(ui_redirect), allow_head=False)
    if SWAGGER_UI_DIR is not None:
        # The bundle's files by name, listed once: not aiohttp's static
        # files, which answer a missing one with an empty 404 (every error
        # here is JSON). FileResponse keeps ETag, Last-Modified and ranges.
        files = {p.name: p for p in SWAGGER_UI_DIR.iterdir() if p.is_file()}

        async def asset(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            path = files.get(name)
            if path is None:
                raise DeepaasError(
                    404, f"no file {echoed(name)} among the Swagger UI's assets"
                )
            return web.FileResponse(path)

        app.router.add_get(f"{bp}/swagger-ui/{{name}}", _docs(asset))
