// Type-check and compile the Next.js guide's TypeScript (docs/gateway.md) so Node can run it.
//
//   node gateway_build_guide.mjs SRC_DIR OUT_DIR
//
// SRC_DIR holds the snippets as the guide names them (lib/realtime.ts, app/api/…/route.ts, components/*.tsx) and a
// node_modules link to tests/node/node_modules. Every .ts and .tsx file is type-checked with `strict` against the
// real pusher-js and Node typings (React is a small stub declared here: the component is checked, never run), then
// transpiled with ts.transpileModule to OUT_DIR/<same path>.mjs, with the Next.js alias `@/x` and relative imports
// rewritten to the compiled .mjs files. Prints one JSON line {"ok", "files", "diagnostics"}; exits 1 on any error.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ts = require('typescript');

const [srcDir, outDir] = process.argv.slice(2).map((p) => path.resolve(p));
const nodeModules = path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules');

// Just enough React for the client component to type-check.
const REACT_STUB = `
declare module 'react' {
  export function useState<T>(initial: T): [T, (value: T | ((previous: T) => T)) => void];
  export function useEffect(effect: () => void | (() => void), deps?: readonly unknown[]): void;
  export function useRef<T>(initial: T): { current: T };
}
declare module 'react/jsx-runtime' {
  export const jsx: unknown;
  export const jsxs: unknown;
  export const Fragment: unknown;
}
declare namespace JSX {
  type Element = unknown;
  interface IntrinsicElements { [name: string]: Record<string, unknown> }
  interface IntrinsicAttributes { key?: string | number }
}
`;

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.name === 'node_modules') return [];
    if (entry.isDirectory()) return walk(full);
    return /\.tsx?$/.test(entry.name) && !entry.name.endsWith('.d.ts') ? [full] : [];
  });
}

function describe(diagnostic) {
  const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
  if (!diagnostic.file) return text;
  const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
  return `${path.relative(srcDir, diagnostic.file.fileName)}:${line + 1}:${character + 1}: ${text}`;
}

const files = walk(srcDir).sort();
const stub = path.join(srcDir, 'react-stub.d.ts');
fs.writeFileSync(stub, REACT_STUB);

const program = ts.createProgram([...files, stub], {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
  types: ['node'],
  typeRoots: [path.join(nodeModules, '@types')],
  jsx: ts.JsxEmit.ReactJSX,
  baseUrl: srcDir,
  paths: { '@/*': ['./*'] },
  esModuleInterop: true,
  skipLibCheck: true,
  isolatedModules: true,
});
const diagnostics = ts.getPreEmitDiagnostics(program).map(describe);

const built = [];
for (const file of files) {
  const relative = path.relative(srcDir, file);
  const target = path.join(outDir, relative.replace(/\.tsx?$/, '.mjs'));
  const output = ts.transpileModule(fs.readFileSync(file, 'utf8'), {
    fileName: relative,
    reportDiagnostics: true,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, jsx: ts.JsxEmit.ReactJSX },
  });
  diagnostics.push(...(output.diagnostics ?? []).map(describe));
  const imports = /(from\s+|import\()(['"])(@\/|\.{1,2}\/)([^'"]+)\2/g;
  const code = output.outputText.replace(imports, (_, lead, quote, prefix, rest) => {
    const module = prefix === '@/' ? path.join(outDir, rest) : path.resolve(path.dirname(target), prefix + rest);
    let spec = path.relative(path.dirname(target), `${module}.mjs`).split(path.sep).join('/');
    if (!spec.startsWith('.')) spec = `./${spec}`;
    return `${lead}${quote}${spec}${quote}`;
  });
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, code);
  built.push(path.relative(outDir, target));
}

const ok = diagnostics.length === 0;
process.stdout.write(JSON.stringify({ ok, files: built, diagnostics }) + '\n', () => process.exit(ok ? 0 : 1));
