// Makes or edits images with the Vercel AI SDK's `generateImage`, as its users set it up, and
// prints the result as one JSON line.
// Usage: node ai_sdk_images.mjs BASE_URL REQUEST_JSON
// REQUEST_JSON: {"provider": "openai" | "compatible", "model", "prompt", "n"?, "size"?,
//                "edit"?: base64 of the image to edit, "providerOptions"?}
// Prints {"images": [{"mediaType", "base64"}]}, or {"thrown": NAME, "message": MESSAGE} (exit 0).
import { generateImage } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const [baseURL, raw] = process.argv.slice(2);
const request = JSON.parse(raw);
const apiKey = "unused";
const model =
  request.provider === "openai"
    ? createOpenAI({ baseURL, apiKey }).image(request.model)
    : createOpenAICompatible({ name: "sfproxy", baseURL, apiKey }).imageModel(request.model);
const prompt = request.edit
  ? { text: request.prompt, images: [Buffer.from(request.edit, "base64")] }
  : request.prompt;

try {
  const result = await generateImage({
    model,
    prompt,
    n: request.n ?? 1,
    size: request.size,
    providerOptions: request.providerOptions,
    maxRetries: 0,
  });
  const images = result.images.map((image) => ({
    mediaType: image.mediaType,
    base64: image.base64,
  }));
  console.log(JSON.stringify({ images }));
} catch (error) {
  console.log(JSON.stringify({ thrown: error.constructor.name, message: error.message }));
}
