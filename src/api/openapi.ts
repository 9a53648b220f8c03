// The OpenAPI 3.1 document, assembled from the route table (server.ts):
// the schemas in it are the ones Fastify validates with.

import type { Route } from './server.ts';

export function buildOpenApi(routes: Route[]): object {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: object[] = [];
    for (const [where, schema] of [['path', r.schema.params], ['query', r.schema.querystring], ['header', r.schema.headers]] as const) {
      const s = schema as { properties?: Record<string, object>; required?: string[] } | undefined;
      for (const [key, p] of Object.entries(s?.properties ?? {})) {
        // Fastify wants header names lower-case; the document spells them as clients write them.
        const name = where === 'header' ? key.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase()) : key;
        parameters.push({ name, in: where, required: where === 'path' || (s?.required ?? []).includes(key), schema: p });
      }
    }
    const responses: Record<string, object> = {};
    for (const [code, schema] of Object.entries(r.schema.response)) {
      const type = Number(code) >= 400 ? 'application/problem+json' : 'application/json';
      responses[code] = { description: Number(code) >= 400 ? 'A problem (RFC 9457)' : 'Success', content: { [type]: { schema } } };
    }
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      summary: r.summary,
      ...(r.auth ? {} : { security: [] }),
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(r.schema.body ? { requestBody: { required: true, content: { 'application/json': { schema: r.schema.body } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Tern HTTP API', version: '1' },
    components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'A key from `tern apikey create`' } } },
    security: [{ apiKey: [] }],
    paths,
  };
}
