// Sign-in at the person's OpenID Connect provider: Authorization Code with PKCE for a public client,
// done by oidc-client-ts (vendored, global `oidc`). The access token lives in this page's memory only:
// never in localStorage, sessionStorage or a cookie. Only the short-lived sign-in state (PKCE verifier,
// `state`) waits in sessionStorage while the browser is at the provider, and is removed on return.

const { UserManager, WebStorageStateStore, InMemoryWebStorage } = globalThis.oidc;

// What the page is told by GET /version (`auth`): nothing in it is secret.
// { mode, issuer, audience, required_scope, client_id, audience_parameter }; `extraScopes`: what else the
// page asks for (post::feedback when the service keeps feedback).
export class Session {
  constructor(auth, pageUrl, extraScopes = []) {
    this.auth = auth;
    this.pageUrl = pageUrl;
    this.user = null;
    this.onChange = () => {};
    this.manager = null;
    if (auth.mode !== "oauth2" || !auth.client_id) return;
    const audience = {};
    if (auth.audience_parameter && auth.audience_parameter !== "none" && auth.audience) {
      audience[auth.audience_parameter] = auth.audience;
    }
    this.manager = new UserManager({
      authority: auth.issuer,
      client_id: auth.client_id,
      redirect_uri: pageUrl,
      post_logout_redirect_uri: pageUrl,
      response_type: "code",
      scope: ["openid", auth.required_scope, ...extraScopes].join(" "),
      extraQueryParams: audience,
      // RFC 8707 names the resource again when the code is exchanged; Auth0's `audience` is not repeated.
      extraTokenParams: auth.audience_parameter === "resource" ? audience : {},
      userStore: new WebStorageStateStore({ store: new InMemoryWebStorage() }),
      stateStore: new WebStorageStateStore({ store: window.sessionStorage }),
      loadUserInfo: false,
      automaticSilentRenew: false,
      monitorSession: false,
    });
    this.manager.events.addAccessTokenExpired(() => this.end("Your sign-in has expired: sign in again."));
  }

  // Sign-in works only with a client id; with auth on and none, the page can only explain.
  get configured() {
    return this.manager !== null;
  }

  get required() {
    return this.auth.mode === "oauth2";
  }

  get signedIn() {
    return this.user !== null && !this.user.expired;
  }

  // Called once on load: finishes a sign-in (or sign-out) the provider has just sent the browser back
  // from, then removes the code and state from the address bar. Returns an error message or null.
  async resume() {
    if (!this.manager) return null;
    const params = new URLSearchParams(window.location.search);
    if (!params.has("state")) return null;
    window.history.replaceState(null, "", this.pageUrl);
    try {
      if (params.has("code") || params.has("error")) {
        this.user = await this.manager.signinRedirectCallback(this.pageUrl + "?" + params.toString());
        this.onChange();
      } else {
        await this.manager.signoutRedirectCallback(this.pageUrl + "?" + params.toString());
      }
      return null;
    } catch (error) {
      return `Sign-in did not complete: ${error.message || error}`;
    } finally {
      await this.manager.clearStaleState();
    }
  }

  // Asks for `profile email` too when the provider's discovery document offers them, so that the page
  // can greet the person by name; the API never needs those claims.
  async signIn() {
    const metadata = await this.manager.metadataService.getMetadata();
    const offered = metadata.scopes_supported ?? [];
    const extra = ["profile", "email"].filter((scope) => offered.includes(scope));
    await this.manager.signinRedirect({ scope: [this.manager.settings.scope, ...extra].join(" ") });
  }

  // Ends the session at the provider too when it offers an end-session endpoint; otherwise here only.
  async signOut() {
    const user = this.user;
    this.user = null;
    try {
      const metadata = await this.manager.metadataService.getMetadata();
      if (metadata.end_session_endpoint) {
        await this.manager.signoutRedirect({ id_token_hint: user?.id_token, extraQueryParams: {} });
        return;
      }
    } catch {
      // the provider is unreachable: forgetting the token here is still a sign-out for this page
    }
    await this.manager.removeUser();
    this.onChange();
  }

  // The token was refused (401) or has expired: forget it and say why.
  async end(message) {
    this.user = null;
    if (this.manager) await this.manager.removeUser();
    this.onChange(message);
  }

  // Who the person is to themselves: their name, else their user name, else their e-mail; the provider's
  // id for them (`sub`) only when it says nothing else.
  get displayName() {
    const profile = this.user?.profile ?? {};
    return profile.name || profile.preferred_username || profile.email || profile.sub || "";
  }

  authorization() {
    return this.signedIn ? { Authorization: `Bearer ${this.user.access_token}` } : {};
  }
}
