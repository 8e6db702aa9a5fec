// Streams images with the openai npm package and prints what its iterator gives, one JSON per line.
// Usage: node stream_images.mjs BASE_URL REQUEST_JSON
// Each event is printed as the SDK yields it; an error the iterator throws is printed as
// {"thrown": NAME, "message": MESSAGE}, and the script still exits 0 so the test reads it.
import OpenAI from "openai";

const [baseURL, request] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });

try {
  const stream = await client.images.generate({ ...JSON.parse(request), stream: true });
  for await (const event of stream) {
    console.log(JSON.stringify(event));
  }
} catch (error) {
  console.log(JSON.stringify({ thrown: error.constructor.name, message: error.message }));
}
