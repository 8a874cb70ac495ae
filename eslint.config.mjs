import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.cache/**', '.test-artifacts/**', 'out/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The sidecar is plain Node: it must run without VS Code (standalone --serve, tests, other apps).
    files: ['sidecar/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: [{ name: 'vscode', message: 'The sidecar never imports vscode.' }] }],
    },
  },
  {
    // The webview talks to the extension only, never to the sidecar or the network.
    files: ['media/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['vscode', 'node:*', 'ws'], message: 'Browser code only.' }] }],
    },
  },
);
