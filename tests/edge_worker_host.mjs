// Runs cloudflare/worker.js in workerd through Miniflare 4, for
// tests/test_edge_worker.py. One argument, JSON:
//   {worker, compatibility_date, vars, producers: {BINDING: queue},
//    consumer: {queue, maxBatchSize, maxBatchTimeout, maxRetries, deadLetterQueue},
//    ratelimits: {BINDING: {limit, period}}}
// A second worker consumes the dead-letter queue and logs each body as
// `dead-letter queue got <json>`. Prints `{"url": ...}` once it listens, then
// the workers' console lines (stdout and stderr both) on stdout. Stops, with
// workerd, on SIGTERM, SIGINT or the end of stdin.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// miniflare is installed in cloudflare/ (npm ci there), not next to this file.
const require = createRequire(path.join(here, "..", "cloudflare", "package.json"));
const { Miniflare } = await import(require.resolve("miniflare"));

const config = JSON.parse(process.argv[2]);
const { queue, ...consumer } = config.consumer;

const deadLetterReader = `export default {
  async queue(batch) {
    for (const message of batch.messages) {
      console.log("dead-letter queue got " + JSON.stringify(message.body));
      message.ack();
    }
  },
};`;

const mf = new Miniflare({
  host: "127.0.0.1",
  port: 0,
  handleRuntimeStdio(stdout, stderr) {
    stdout.pipe(process.stdout);
    stderr.pipe(process.stdout);
  },
  workers: [
    {
      name: "intake",
      modules: true,
      // cloudflare/ is "type": "module": its .js files are ES modules, as
      // wrangler bundles them (Miniflare would take imported .js for CommonJS).
      modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
      scriptPath: config.worker,
      compatibilityDate: config.compatibility_date,
      bindings: config.vars,
      queueProducers: Object.fromEntries(
        Object.entries(config.producers).map(([binding, queueName]) => [binding, { queueName }]),
      ),
      queueConsumers: { [queue]: consumer },
      ratelimits: Object.fromEntries(
        Object.entries(config.ratelimits).map(([binding, simple]) => [binding, { simple }]),
      ),
    },
    {
      name: "dead-letter-reader",
      modules: true,
      script: deadLetterReader,
      compatibilityDate: config.compatibility_date,
      queueConsumers: { [consumer.deadLetterQueue]: { maxBatchTimeout: 1 } },
    },
  ],
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.resume();

const url = await mf.ready;
process.stdout.write(`${JSON.stringify({ url: url.href })}\n`);
