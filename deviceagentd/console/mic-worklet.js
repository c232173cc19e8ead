// The microphone as the voice WebSocket wants it: 16 kHz mono PCM s16le in 60 ms frames.
// Runs in the audio thread; each output sample is the mean of the input samples it covers (a
// box filter before decimation, enough for speech), and every frame goes to the page with its
// level for the meter.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 960; // 60 ms

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;
    this.boundary = this.step;
    this.position = 0;
    this.sum = 0;
    this.count = 0;
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.position += 1;
      if (this.position >= this.boundary) {
        this.boundary += this.step;
        const sample = Math.max(-1, Math.min(1, this.sum / this.count));
        this.sum = 0;
        this.count = 0;
        this.energy += sample * sample;
        this.frame[this.filled++] = sample < 0 ? sample * 0x8000 : sample * 0x7fff;
        if (this.filled === FRAME_SAMPLES) {
          const level = Math.sqrt(this.energy / FRAME_SAMPLES);
          this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
          this.frame = new Int16Array(FRAME_SAMPLES);
          this.filled = 0;
          this.energy = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-16k", Pcm16kProcessor);
