// Builds the three worlds into dist/: the extension (cjs, `vscode` external), the sidecar and its worker
// entry points (node), and the webview (browser). Type checking and lint run beside this, not inside it.
import * as esbuild from 'esbuild';

const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');

/** Prints errors in the shape of VS Code's `$esbuild-watch` problem matcher. */
const problemMatcher = {
  name: 'problem-matcher',
  setup(build) {
    build.onStart(() => console.log('[watch] build started'));
    build.onEnd((result) => {
      for (const { text, location } of result.errors) {
        console.error(`✘ [ERROR] ${text}`);
        if (location) console.error(`    ${location.file}:${location.line}:${location.column}:`);
      }
      console.log('[watch] build finished');
    });
  },
};

const common = {
  bundle: true,
  minify: production,
  sourcemap: !production,
  logLevel: watch ? 'silent' : 'warning',
  plugins: watch ? [problemMatcher] : [],
};

const node = {
  ...common,
  platform: 'node',
  target: 'node20',
  // node-llama-cpp ships native binaries and must be loaded from node_modules at run time.
  external: ['vscode', 'node-llama-cpp', '@node-llama-cpp/*'],
};

const builds = [
  { ...node, format: 'cjs', entryPoints: { extension: 'src/extension.ts' }, outdir: 'dist' },
  { ...node, format: 'cjs', entryPoints: { sidecar: 'sidecar/main.ts' }, outdir: 'dist' },
  // The LLM worker is ESM because node-llama-cpp is ESM-only.
  { ...node, format: 'esm', entryPoints: { llmWorker: 'sidecar/workers/llm/llmWorkerMain.ts' }, outdir: 'dist', outExtension: { '.js': '.mjs' },
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" } },
  { ...common, platform: 'browser', format: 'esm', target: 'es2022', entryPoints: { panel: 'media/panel.ts' }, outdir: 'dist/media' },
];

const existing = [];
for (const options of builds) {
  const entries = Object.values(options.entryPoints);
  const fs = await import('node:fs');
  if (entries.every((entry) => fs.existsSync(entry))) existing.push(options);
}

if (watch) {
  const contexts = await Promise.all(existing.map((options) => esbuild.context(options)));
  await Promise.all(contexts.map((context) => context.watch()));
} else {
  await Promise.all(existing.map((options) => esbuild.build(options)));
}
