import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { contentSecurityPolicy, createNonce, panelHtml } from '../../../src/panelHtml';

describe('panel HTML', () => {
  const html = panelHtml({ cspSource: 'https://file+.vscode-resource.vscode-cdn.net', scriptUri: 'https://r/panel.js', styleUri: 'https://r/panel.css', nonce: 'abc123' });

  it('allows scripts only with the nonce and no inline styles', () => {
    const csp = contentSecurityPolicy('https://r', 'abc123');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'nonce-abc123'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /style-src https:\/\/r(;|$)/);
  });

  it('loads the built script with the nonce and has no inline script or style', () => {
    assert.match(html, /<script type="module" nonce="abc123" src="https:\/\/r\/panel\.js"><\/script>/);
    assert.equal((html.match(/<script/g) ?? []).length, 1);
    assert.doesNotMatch(html, /<style|style="/);
  });

  it('makes a fresh nonce each time', () => {
    const a = createNonce();
    assert.match(a, /^[A-Za-z0-9]{32}$/);
    assert.notEqual(a, createNonce());
  });
});
