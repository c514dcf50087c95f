// A real OpenID Connect provider on loopback for the end-to-end tests: client-credentials grant, and a
// resource server whose access tokens are JWTs (RFC 9068) carrying its audience and scope.
// With PAGE_URLs, also the web page's public clients (Authorization Code + PKCE, those redirect URIs)
// and the provider's own login and consent pages (devInteractions: any user name and password sign in).
// Its users carry a name, a user name and an e-mail (scopes `profile` and `email`), in the ID token as
// Auth0 puts them there.
// Usage: node provider.mjs PORT AUDIENCE [PAGE_URL...]   (prints one JSON line with the issuer once listening)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const audience = process.argv[3];
const pageUrls = process.argv.slice(4);
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e-rsa', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  scopes: ['openid', 'profile', 'email', 'get::prediction', 'post::feedback', 'other::thing'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'] },
  conformIdTokenClaims: false,
  // Any login is a user; `alice` is "Alice Example", alice@example.org.
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({
      sub,
      name: `${sub.charAt(0).toUpperCase()}${sub.slice(1)} Example`,
      preferred_username: sub,
      email: `${sub}@example.org`,
    }),
  }),
  clients: [
    ...(pageUrls.length ? pageClients(pageUrls) : []),
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
    devInteractions: { enabled: pageUrls.length > 0 },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator, client) => {
        if (resourceIndicator !== audience) throw new Error(`unknown resource ${resourceIndicator}`);
        return {
          // The second page client stands for an account the API's scope was never granted to.
          scope:
            client.clientId === 'web-page-no-scope' ? 'other::thing' : 'get::prediction post::feedback other::thing',
          audience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
});

// Public clients (no secret): what a browser page can be. The provider's default CORS policy lets a
// public client's redirect origin call the token endpoint.
function pageClients(redirects) {
  return ['web-page', 'web-page-no-scope'].map((clientId) => ({
    client_id: clientId,
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: redirects,
    post_logout_redirect_uris: redirects,
    scope: 'openid profile email get::prediction post::feedback other::thing',
  }));
}

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
