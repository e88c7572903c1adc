// The microphone, as 20 ms frames of 16-bit PCM at 24 kHz (the Realtime API's input).
//
// Runs on the audio rendering thread. The context's own rate (`sampleRate`, often 48 kHz
// or 44.1 kHz) is converted by linear interpolation over a box pre-filter as wide as the
// step, which is enough for speech in the band a speech-to-text model listens to. Each
// frame goes to the page as a transferred ArrayBuffer, with its RMS level for the meter.

const TARGET_RATE = 24000;
const FRAME = TARGET_RATE / 50; // 480 samples: 20 ms

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.position = 0; // where the next output sample falls, in input samples
    this.history = new Float32Array(0); // input not yet consumed (and the filter's tail)
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    const input = new Float32Array(this.history.length + channel.length);
    input.set(this.history);
    input.set(channel, this.history.length);
    const width = Math.max(1, Math.floor(this.step));
    while (this.position + width < input.length) {
      const at = Math.floor(this.position);
      const frac = this.position - at;
      let sum = 0;
      for (let k = 0; k < width; k++) {
        sum += input[at + k] * (1 - frac) + input[at + k + 1] * frac;
      }
      const value = Math.max(-1, Math.min(1, sum / width));
      this.energy += value * value;
      this.frame[this.filled++] = value < 0 ? value * 0x8000 : value * 0x7fff;
      if (this.filled === FRAME) this.flush();
      this.position += this.step;
    }
    const keep = Math.floor(this.position);
    this.history = input.slice(keep);
    this.position -= keep;
    return true;
  }

  flush() {
    const buffer = this.frame.buffer;
    const rms = Math.sqrt(this.energy / FRAME);
    this.port.postMessage({ pcm: buffer, rms }, [buffer]);
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.energy = 0;
  }
}

registerProcessor("pcm-capture", PcmCapture);
