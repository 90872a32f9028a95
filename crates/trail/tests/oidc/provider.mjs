// A real OpenID provider for Trail's single sign-on tests: Node's `oidc-provider` (npm) with its
// development login pages (any password; the login name is the account). Prints its issuer URL.
//
// env: CLIENT_ID, CLIENT_SECRET, REDIRECT_URI — the one client (Trail);
//      USERS_FILE — JSON {"ada": {"email": "...", "name": "...", "groups": ["..."]}}, read at every
//      sign-in, so a test removes a group by rewriting it;
//      TAMPER_FILE — read at every ID token: "audience" (issued for another client) or "expired"
//      (already expired), for the tests of what Trail must refuse; anything else, a good token.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const users = () => JSON.parse(readFileSync(process.env.USERS_FILE, 'utf8'));
const tamper = () => {
  try { return readFileSync(process.env.TAMPER_FILE, 'utf8').trim(); } catch { return ''; }
};

const configuration = {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    response_types: ['code'],
    grant_types: ['authorization_code'],
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // Every claim in the ID token (Trail reads the groups from it).
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const u = users()[sub];
    if (!u) return undefined;
    return {
      accountId: sub,
      async claims() { return { sub, email: u.email, email_verified: true, name: u.name, groups: u.groups }; },
    };
  },
  features: { devInteractions: { enabled: true } },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 600 },
};

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  const issue = provider.IdToken.prototype.issue;
  provider.IdToken.prototype.issue = async function tampered(options = {}) {
    const mode = tamper();
    if (mode === 'expired') {
      return issue.call(this, { ...options, expiresAt: Math.floor(Date.now() / 1000) - 300 });
    }
    if (mode === 'audience') {
      const client = this.client;
      Object.defineProperty(this, 'client', {
        value: new Proxy(client, { get: (t, p) => (p === 'clientId' ? 'someone-else' : t[p]) }),
        configurable: true,
      });
    }
    return issue.call(this, options);
  };
  server.on('request', provider.callback());
  console.log(issuer);
});
