// A real OpenID Connect provider on loopback for the end-to-end tests: client-credentials grant, and a
// resource server whose access tokens are JWTs (RFC 9068) carrying its audience and scope.
// Usage: node provider.mjs PORT AUDIENCE   (prints one JSON line with the issuer once listening)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const audience = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-rsa', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  scopes: ['openid', 'get::prediction', 'other::thing'],
  clients: [
    {
      client_id: 'predictor',
      client_secret: 'predictor-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'get::prediction',
    },
    {
      client_id: 'no-scope',
      client_secret: 'no-scope-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'other::thing',
    },
  ],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) throw new Error(`unknown resource ${resourceIndicator}`);
        return {
          scope: 'get::prediction other::thing',
          audience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
