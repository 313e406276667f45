// Runs a Python script under MicroPython (the WebAssembly port, on Node.js).
//
//   node tests/micropython/run.mjs SCRIPT [FILE...]
//
// Each FILE is copied into MicroPython's in-memory filesystem at its own
// absolute path, so the script sees those files and nothing else of the
// host; SCRIPT runs with sys.argv = [SCRIPT, FILE...]. The package's own
// entry point exits 0 even when the script raises; here an uncaught
// exception prints its traceback and exits 1, and sys.exit(N) exits N.
//
// The npm package @micropython/micropython-webassembly-pyscript is looked
// for in .node/ at the top of the source tree (`make micropython` installs
// it there), or wherever MICROPYTHON_MJS names its micropython.mjs.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const entry = process.env.MICROPYTHON_MJS || path.join(root, ".node", "node_modules",
    "@micropython", "micropython-webassembly-pyscript", "micropython.mjs");

const [script, ...files] = process.argv.slice(2);
if (!script) {
    process.stderr.write("usage: run.mjs SCRIPT [FILE...]\n");
    process.exit(2);
}
const { loadMicroPython } = await import(pathToFileURL(entry).href);
const mp = await loadMicroPython({
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
    linebuffer: true,
});

for (const file of files) {
    const where = path.resolve(file);
    mp.FS.mkdirTree(path.dirname(where));
    mp.FS.writeFile(where, fs.readFileSync(where));
}
mp.globals.set("_argv", [path.resolve(script), ...files.map((f) => path.resolve(f))]);

try {
    mp.runPython("import sys\nsys.argv.clear()\nsys.argv.extend(_argv)\ndel _argv\n");
    mp.runPython(fs.readFileSync(script, "utf8"));
} catch (e) {
    // A PythonError's message is the traceback; SystemExit carries its code.
    const exit = /^SystemExit: ?(.*)$/m.exec(e.message || "");
    if (e.type === "SystemExit" || exit) {
        const code = exit && exit[1] !== "" ? Number(exit[1]) : 0;
        process.exit(Number.isInteger(code) ? code : 1);
    }
    process.stderr.write((e.message || String(e)).replace(/\n*$/, "\n"));
    process.exit(1);
}
