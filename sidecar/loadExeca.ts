/**
 * execa is ESM only: a dynamic import loads it both from the bundles and from the sources when tests run them as
 * CommonJS (a static import fails there). Cached, so every caller shares one module.
 */

type Execa = typeof import('execa').execa;
let execaModule: Promise<Execa> | undefined;

export function loadExeca(): Promise<Execa> {
  execaModule ??= import('execa').then((m) => m.execa);
  return execaModule;
}
