// Makes a video with the openai npm package and prints what it saw, as one JSON line.
// Usage: node videos.mjs BASE_URL API_KEY REQUEST_JSON [IMAGE_PATH]
// It creates the job (with IMAGE_PATH as input_reference, uploaded with toFile), polls
// videos.retrieve as often as the openai-poll-after-ms header says, then downloads the MP4 and
// the thumbnail. An error is printed as {"thrown": NAME, "status": STATUS, "message": MESSAGE}.
import { readFile } from "node:fs/promises";
import OpenAI, { toFile } from "openai";

const [baseURL, apiKey, request, imagePath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

try {
  const body = JSON.parse(request);
  if (imagePath) {
    body.input_reference = await toFile(await readFile(imagePath), "first-frame.png", {
      type: "image/png",
    });
  }
  let video = await client.videos.create(body);
  // Every answer for an unfinished job should carry the hint, and the finished one none.
  const polls = { unfinished: 0, hinted: 0, final_hint: null };
  while (true) {
    const { data, response } = await client.videos.retrieve(video.id).withResponse();
    const hint = response.headers.get("openai-poll-after-ms");
    video = data;
    if (video.status !== "queued" && video.status !== "in_progress") {
      polls.final_hint = hint;
      break;
    }
    polls.unfinished += 1;
    if (hint !== null) polls.hinted += 1;
    await new Promise((done) => setTimeout(done, Math.min(Number(hint ?? 1000), 1000)));
  }
  const mp4 = Buffer.from(await (await client.videos.downloadContent(video.id)).arrayBuffer());
  const thumbnail = await client.videos.downloadContent(video.id, { variant: "thumbnail" });
  console.log(
    JSON.stringify({
      video,
      polls,
      mp4_bytes: mp4.length,
      mp4_box: mp4.subarray(4, 8).toString("latin1"),
      thumbnail_type: thumbnail.headers.get("content-type"),
    }),
  );
} catch (error) {
  console.log(
    JSON.stringify({ thrown: error.constructor.name, status: error.status, message: error.message }),
  );
}
