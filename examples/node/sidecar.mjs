// The official OpenAI Node SDK, unchanged, pointed at the streamtap sidecar proxy.
//
//   streamtap proxy --upstream https://api.openai.com/v1 --listen 127.0.0.1:8787 &
//   npm install
//   OPENAI_BASE_URL=http://127.0.0.1:8787/v1 OPENAI_API_KEY=sk-... node sidecar.mjs "Say hi"
//
// The proxy retries and falls back before the first token, so this script never sees a
// failed attempt. If the upstream breaks *after* text was streamed, the proxy ends the
// stream with an SSE error event: the SDK throws instead of returning a silently cut answer.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL, // the sidecar, e.g. http://127.0.0.1:8787/v1
  apiKey: process.env.OPENAI_API_KEY, // forwarded upstream (or the proxy's client token)
  maxRetries: 0, // the proxy already retries; SDK retries on top would multiply the load
});

const prompt = process.argv.slice(2).join(" ") || "Explain in one sentence why streaming answers feel faster.";

try {
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: prompt }],
    stream: true,
  });
  for await (const chunk of stream) {
    process.stdout.write(chunk.choices[0]?.delta?.content ?? "");
  }
  process.stdout.write("\n");
} catch (error) {
  // After the first token, a broken upstream surfaces here, e.g.
  // "streamtap: stream_interrupted: the connection broke mid-stream (...)".
  process.stdout.write("\n");
  console.error(`stream failed: ${error.constructor.name}: ${error.message}`);
  process.exitCode = 1;
}
