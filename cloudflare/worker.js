// docutrain's edge intake: a Cloudflare Worker that takes upload requests
// and puts them on a Cloudflare queue (intake.js). docutrain then gets them
// one of two ways (wrangler.toml): its runners pull the queue over HTTP, or
// this Worker's queue() consumer pushes each one to `docutrain serve`
// (push.js). workerd lets the entry module export handlers only, so the
// code lives in those two modules.
import { handle } from "./intake.js";
import { push } from "./push.js";

export default {
  fetch: (request, env) => handle(request, env),
  queue: (batch, env) => push(batch, env),
};
