// A real OpenID Connect provider for the tests: npm `oidc-provider`, one confidential client,
// authorization code with PKCE (S256), and its development login form, where any login is
// taken as the user's email. A login of the form `unverified:bob@example.com` signs in
// bob@example.com with `email_verified: false`.
//
// Usage: node provider.mjs MODULE CONFIG.json: MODULE is the file URL of the installed
// package's entry (lib/index.js; tests/npm_tools.py installs it outside this tree), CONFIG
// is {"client_id", "client_secret", "redirect_uris": [...]}. It listens on a free loopback
// port and prints one line of JSON, {"issuer": "http://127.0.0.1:PORT"}, once it answers.
//
// A redirect URI on 127.0.0.1 matches a registered one whatever its port (as RFC 8252 7.3
// asks for loopback redirects): each test's KeyRelay server has a port of its own, and one
// provider serves them all.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

const { default: Provider } = await import(process.argv[2]);
const config = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const UNVERIFIED = 'unverified:';

function findAccount(_ctx, id) {
  const unverified = id.startsWith(UNVERIFIED);
  const email = unverified ? id.slice(UNVERIFIED.length) : id;
  return {
    accountId: id,
    async claims() {
      return { sub: id, email, email_verified: !unverified };
    },
  };
}

// Consent is given at once: the tests sign in, they do not review scopes.
async function loadExistingGrant(ctx) {
  const grant = new ctx.oidc.provider.Grant({
    clientId: ctx.oidc.client.clientId,
    accountId: ctx.oidc.session.accountId,
  });
  grant.addOIDCScope('openid email');
  await grant.save();
  return grant;
}

function loopbackAnyPort(allowed) {
  return function redirectUriAllowed(uri) {
    const wanted = new URL(uri);
    return wanted.hostname === '127.0.0.1' && allowed.some((each) => {
      const registered = new URL(each);
      return registered.hostname === '127.0.0.1' && registered.pathname === wanted.pathname;
    });
  };
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.client_id,
        client_secret: config.client_secret,
        redirect_uris: config.redirect_uris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
      },
    ],
    pkce: { required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    // The email goes into the ID token itself, where a sign-in reads it.
    conformIdTokenClaims: false,
    findAccount,
    loadExistingGrant,
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: { devInteractions: { enabled: true } },
  });
  provider.Client.prototype.redirectUriAllowed = loopbackAnyPort(config.redirect_uris);
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The test run ends the provider by closing its stdin (or killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
