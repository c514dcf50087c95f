// Starts Swagger UI on /docs (web/docs.py) from the vendored bundle, as FastAPI's own page would, without
// an inline script: the page's Content-Security-Policy allows scripts from this service only.
globalThis.ui = globalThis.SwaggerUIBundle({
  url: new URL("openapi.json", window.location.href).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [globalThis.SwaggerUIBundle.presets.apis, globalThis.SwaggerUIBundle.SwaggerUIStandalonePreset],
});
