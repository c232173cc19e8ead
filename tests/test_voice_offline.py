"""The offline recogniser (voice/recognizer/, providers/offline_asr.py): the site grammar, spoken
numbers, pronunciations, and pocketsphinx on speech that espeak-ng makes here — commands, and
every bad input the recogniser must refuse rather than force onto the nearest command.

Speech is generated once per session and cached under pytest's tmp dir (`speech_cache`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import voice_samples as vs
from local_corpus import SITE

from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.voice.audio import SAMPLE_RATE, Resampler
from deviceagentd.voice.providers.base import LANGUAGE_UNSUPPORTED, PROVIDER_UNAVAILABLE, AsrResult, VoiceProviderError
from deviceagentd.voice.providers.offline_asr import PITCH_BYTES, OfflineAsr
from deviceagentd.voice.recognizer import decoder as decoder_module
from deviceagentd.voice.recognizer.decoder import ModelFiles, RecogniserUnavailable, segmentation_problem
from deviceagentd.voice.recognizer.engine import EngineSettings, OfflineEngine
from deviceagentd.voice.recognizer.fsg import GrammarError, compile_rules
from deviceagentd.voice.recognizer.grammar import SiteGrammar, build_grammar, spoken
from deviceagentd.voice.recognizer.numbers import say, say_all, say_decimal, to_digits
from deviceagentd.voice.recognizer.pitch import WarpSettings, voice_pitch_hz
from deviceagentd.voice.recognizer.pronounce import build_lexicon, ipa_to_cmu
from deviceagentd.voice.recognizer.site import DeviceNames, Site

PRODUCTS = Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "products"
SITE_NAMES = tuple(DeviceNames(d.product_id, (d.metadata["name"],), (d.metadata["room"],)) for d in SITE)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(PRODUCTS)


# ---------------------------------------------------------------------------- numbers


def test_every_way_of_saying_a_number_reads_back_as_its_digits() -> None:
    for value in [*range(0, 12_000), *range(12_000, 1_000_000, 997), 999_999]:
        for words in say_all(value):
            assert to_digits(list(words)) == [str(value)], words


def test_decimals_read_back() -> None:
    for whole in (0, 5, 21, 99, 100, 2700):
        for tenth in range(1, 10):
            value = whole + tenth / 10
            assert to_digits(["to", *say_decimal(value), "degrees"]) == ["to", f"{value:.1f}", "degrees"]


def test_words_that_only_look_like_numbers_are_kept() -> None:
    assert to_digits(["set", "the", "temperature", "to", "twenty", "four", "and", "the", "mode", "to", "heat"]) == \
        ["set", "the", "temperature", "to", "24", "and", "the", "mode", "to", "heat"]
    assert to_digits(["point", "five"]) == ["point", "5"]
    assert to_digits(["one", "hundred", "and", "five"]) == ["105"]
    assert to_digits(["twenty", "seven", "hundred"]) == ["2700"]
    assert say(2700) == ("two", "thousand", "seven", "hundred")
    with pytest.raises(ValueError):
        say(-1)


# ---------------------------------------------------------------------------- grammar


def test_the_grammar_takes_the_engines_phrasings_over_the_sites_words(catalog: Catalog) -> None:
    grammar = build_grammar(catalog, SITE_NAMES)
    accepts = grammar.automaton.accepts
    for sentence in (
        "what is the current temperature",
        "turn off the bedroom light",
        "set the thermostat to twenty one point five degrees",
        "put the thermostat in eco mode",
        "set the light to warm white",
        "make the bedroom light red",
        "open the curtain halfway",
        "fan speed high",
        "how much power is the coffee machine using",
        "which devices are online",
        "any alerts today",
        "could you turn on the air conditioner please",
        # People drop the article before a place; the recogniser often misses it anyway.
        "what's the temperature in living room",
        "lights off in living room",
    ):
        assert accepts(sentence.split()), sentence
    # One request per utterance (a second one would double the grammar and the recogniser's memory).
    for outside in ("tell me a joke", "turn on the tv", "set the thermostat to ninety degrees",
                    "turn on the bedroom light and set it to thirty percent",
                    "set the brightness to one hundred fifty percent", "what is the", "open the garage door"):
        assert not accepts(outside.split()), outside
    assert grammar.transcript(["set", "the", "thermostat", "to", "twenty", "one", "point", "five", "degrees"]) == \
        "set the thermostat to 21.5 degrees"
    # No product is named in the code: every word comes from the specs, devices or the lexicon.
    assert {"thermostat", "curtain", "coffee", "kitchen", "kelvin", "eco"} <= grammar.words


def test_a_new_product_brings_its_own_words(tmp_path: Path, catalog: Catalog) -> None:
    spec = json.loads((PRODUCTS / "switch.json").read_text())
    spec["name"] = "Zorbex heater"
    spec.pop("voice", None)
    (tmp_path / "zorbex_heater.json").write_text(json.dumps(spec))
    grammar = build_grammar(load_catalog(tmp_path), [DeviceNames("zorbex_heater", ("Kwazimodo radiator",), ("snug",))])
    assert grammar.automaton.accepts(["turn", "on", "the", "zorbex", "heater"])
    assert grammar.automaton.accepts(["turn", "off", "the", "snug", "kwazimodo", "radiator"])
    assert not grammar.automaton.accepts(["turn", "on", "the", "light"])


def test_questions_name_any_device_of_the_site_from_one_copy_of_its_names(tmp_path: Path, catalog: Catalog) -> None:
    names = (*SITE_NAMES, DeviceNames("light", ("Kwazimodo lamp",), ("snug",)))
    grammar = build_grammar(catalog, names)
    accepts = grammar.automaton.accepts
    # A question about one product's field may name any device or place; the agent answers it.
    for sentence in ("what is the humidity in the snug", "what is the humidity of the kwazimodo lamp",
                     "how warm is the kitchen", "what brightness is the office thermostat set to",
                     "check the state of the snug kwazimodo lamp"):
        assert accepts(sentence.split()), sentence
    # Commands still name only devices of a product that has the command.
    assert accepts(["set", "the", "target", "temperature", "of", "the", "office", "thermostat", "to", "twenty"])
    assert not accepts(["set", "the", "target", "temperature", "of", "the", "kwazimodo", "lamp", "to", "twenty"])

    def copies(grammar: SiteGrammar) -> int:
        return sum("kwazimodo" in arcs for arcs in grammar.automaton.arcs)

    # Three more fields to ask about add no copy of the device names (each copy is recogniser memory).
    spec = json.loads((PRODUCTS / "thermostat.json").read_text())
    for field in ("pressure", "voltage", "noise_level"):
        spec["telemetry"][field] = {"type": "int", "description": f"The {field}.", "min": 0, "max": 100}
    for source in PRODUCTS.glob("*.json"):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "thermostat.json").write_text(json.dumps(spec))
    wider = build_grammar(load_catalog(tmp_path), names)
    assert wider.automaton.accepts(["what", "is", "the", "voltage", "in", "the", "snug"])
    assert copies(wider) == copies(grammar)


async def test_a_product_whose_names_are_not_in_the_dictionary_is_heard(tmp_path: Path, speech_cache: Path) -> None:
    vs.require_espeak()
    spec = json.loads((PRODUCTS / "switch.json").read_text())
    spec["name"] = "Zorbex heater"
    spec.pop("voice", None)
    (tmp_path / "zorbex_heater.json").write_text(json.dumps(spec))
    catalog = load_catalog(tmp_path)
    names = (DeviceNames("zorbex_heater", ("Kwazimodo radiator",), ("snug",)),)
    provider = OfflineAsr(OfflineEngine(lambda: Site(1, catalog, lambda: names)))
    try:
        loaded = await provider.engine.prepare()
        assert {"zorbex", "kwazimodo"} <= set(loaded.lexicon.generated)
        results = await recognise(provider, espeak_pcm(speech_cache, "turn on the zorbex heater"))
        assert results[-1].final and not results[-1].refused and "zorbex heater" in results[-1].text
    finally:
        await provider.close()


def test_names_are_spoken_words() -> None:
    assert spoken("Level_2 fan-speed") == "level two fan speed"
    assert spoken("Room 101") == "room one hundred one"


def test_the_compiled_grammar_is_the_language_of_the_rules() -> None:
    rules = {"dev": "[the] (light | lamp)", "num": "(one | two | twenty [one])"}
    automaton = compile_rules(rules, "(turn (on | off) <dev> | set <dev> to <num>) [please]")
    good = ["turn on the light", "turn off lamp please", "set the lamp to twenty one", "set light to two"]
    bad = ["turn on", "set the lamp to", "turn the light", "set lamp to three", "please"]
    assert all(automaton.accepts(s.split()) for s in good)
    assert not any(automaton.accepts(s.split()) for s in bad)
    # Minimal: "the" is shared, both devices lead to one state.
    assert automaton.states <= 12
    for broken, why in (({}, "unknown rule"), ({"a": "<a> x"}, "itself"), ({"a": "(x"}, "missing")):
        with pytest.raises(GrammarError, match=why):
            compile_rules(broken, "<a>")


# ---------------------------------------------------------------------------- pronunciations


def test_words_missing_from_the_dictionary_are_pronounced_by_espeak(tmp_path: Path) -> None:
    vs.require_espeak()
    dictionary = ModelFiles.packaged().dictionary
    lexicon = build_lexicon({"light", "zorbex", "kwazimodo", "temperature"}, dictionary)
    assert lexicon.generated == ("kwazimodo", "zorbex")
    # Both of the dictionary's pronunciations, then espeak-ng's American and British ones.
    assert lexicon.entries["temperature"][:2] == ("T EH M P R AH CH ER", "T EH M P ER AH CH ER")
    assert len(lexicon.entries["temperature"]) > 2
    assert lexicon.entries["zorbex"][0].startswith("Z ")
    text = lexicon.dictionary_text()
    assert "temperature(2) " in text and "\nzorbex Z" in text
    # Without espeak-ng they are spelled letter by letter, so the grammar still loads.
    spelled = build_lexicon({"zorbex"}, dictionary, espeak=None)
    assert spelled.spelled == ("zorbex",) and spelled.entries["zorbex"][0].split()[0] == "Z"


def test_ipa_maps_onto_the_models_phones() -> None:
    assert ipa_to_cmu("θ_ˈɜː_m_ə_s_t_ˌæ_t") == ["TH", "ER", "M", "AH", "S", "T", "AE", "T"]
    assert ipa_to_cmu("ˈeɪ_tʃ_v_ˈæ_k") == ["EY", "CH", "V", "AE", "K"]
    assert ipa_to_cmu("z_ˌaɪ_ə_ˈɑː_ʒ_i") == ["Z", "AY", "AH", "AA", "ZH", "IY"]


# ---------------------------------------------------------------------------- speech


@pytest.fixture(scope="session")
def speech_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("offline-speech")


def espeak_pcm(cache: Path, text: str, voice: str = "en-us", wpm: int = 175) -> bytes:
    """espeak-ng speech at 16 kHz with 0.3 s of room noise before and 0.6 s after (cached)."""
    vs.require_espeak()
    key = f"{voice}-{wpm}-{abs(hash(text)) % 10**12}"
    cached = cache / f"{key}.pcm"
    if cached.exists():
        return cached.read_bytes()
    wav_path = cache / f"{key}.wav"
    subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav_path),
                    text], check=True, capture_output=True, timeout=60)
    with wave.open(str(wav_path), "rb") as wav:
        rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = Resampler(rate, SAMPLE_RATE)
    body = np.frombuffer(resampler.push(raw) + resampler.flush(), dtype="<i2").astype(np.float64)
    signal = np.concatenate([vs.noise(0.3, 20.0, seed=3), body, vs.noise(0.6, 20.0, seed=4)])
    pcm = vs.pcm(signal)
    cached.write_bytes(pcm)
    return pcm


# One recogniser for the module's speech tests (its grammar and decoders take seconds to load).
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def offline(catalog: Catalog) -> AsyncIterator[OfflineAsr]:
    engine = OfflineEngine(lambda: Site(1, catalog, lambda: SITE_NAMES), EngineSettings(max_decoders=2))
    provider = OfflineAsr(engine)
    try:
        yield provider
    finally:
        await provider.close()


async def recognise(provider: OfflineAsr, pcm: bytes, chunk: int = 960, session: str = "test",
                    paced: bool = True) -> list[AsrResult]:
    """Feed 30 ms chunks as a session does (a little pacing lets partials out), then finish."""
    stream = await provider.start("en-US", session)
    try:
        for i in range(0, len(pcm), chunk):
            await stream.send_audio(pcm[i:i + chunk])
            if paced:
                await asyncio.sleep(0)
        await stream.finish()
        async with asyncio.timeout(60):
            return [result async for result in stream.results()]
    finally:
        await stream.close()


@module_loop
@pytest.mark.parametrize(("said", "heard"), [
    ("what is the current temperature", "what is the current temperature"),
    ("close the curtains", "close the curtains"),
    ("which devices are online", "which devices are online"),
    ("set the brightness to fifty percent", "set the brightness to 50 percent"),
])
async def test_commands_and_questions_are_recognised(offline: OfflineAsr, speech_cache: Path, said: str,
                                                     heard: str) -> None:
    results = await recognise(offline, espeak_pcm(speech_cache, said))
    assert results[-1] == AsrResult(heard, final=True)
    assert all(not r.final for r in results[:-1])


@module_loop
async def test_partials_stream_while_the_audio_arrives_and_decoding_is_off_the_loop(
        offline: OfflineAsr, speech_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[str] = set()
    original = decoder_module.GrammarDecoder.feed

    def spy(self: decoder_module.GrammarDecoder, pcm: bytes) -> None:
        threads.add(threading.current_thread().name)
        original(self, pcm)

    monkeypatch.setattr(decoder_module.GrammarDecoder, "feed", spy)
    pcm = espeak_pcm(speech_cache, "turn on the bedroom light in the living room")
    stream = await offline.start(None, "partials")
    partials: list[str] = []
    try:
        for i in range(0, len(pcm), 960):
            await stream.send_audio(pcm[i:i + 960])
            await asyncio.sleep(0.002)  # the decoder keeps up with a real-time speaker
        reader = stream.results()
        await stream.finish()
        async with asyncio.timeout(30):
            async for result in reader:
                if not result.final:
                    partials.append(result.text)
    finally:
        await stream.close()
    assert len(partials) >= 3 and partials[-1].startswith("turn on the")
    assert threads and all(name.startswith("offline-asr") for name in threads)
    assert threading.main_thread().name not in threads


# Each must be refused: an empty final with refused=True, never a command.
def _tones() -> bytes:
    notes = [vs.sine(f, 0.25, amplitude=6000) + vs.sine(f * 1.5, 0.25, amplitude=3000)
             for f in (262, 330, 392, 523, 392, 330, 294, 349, 440, 587, 440, 349)]
    return vs.pcm(np.concatenate([vs.silence(0.3), *notes, vs.silence(0.5)]))


BAD_INPUT = {
    "silence": lambda cache: vs.pcm(vs.silence(3.0)),
    "noise": lambda cache: vs.pcm(vs.noise(3.0, vs.rms_for_dbfs(-30))),
    "music-like tones": lambda cache: _tones(),
    "another language": lambda cache: espeak_pcm(cache, "今天天气怎么样，明天会下雨吗", voice="cmn"),
    "out of vocabulary": lambda cache: espeak_pcm(cache, "tell me a joke"),
    "out of vocabulary 2": lambda cache: espeak_pcm(cache, "order a pizza"),
}


@module_loop
@pytest.mark.parametrize("kind", list(BAD_INPUT))
async def test_bad_input_is_refused_not_forced_onto_a_command(offline: OfflineAsr, speech_cache: Path,
                                                               kind: str) -> None:
    results = await recognise(offline, BAD_INPUT[kind](speech_cache), paced=False)
    assert results[-1] == AsrResult("", final=True, refused=True), results


@module_loop
@pytest.mark.slow
async def test_a_sixty_second_monologue_is_refused_and_costs_no_more_than_its_audio(offline: OfflineAsr,
                                                                                   speech_cache: Path) -> None:
    text = ("Let me tell you about my holiday. We drove to the coast and stayed in a small house by the sea. "
            "Every morning we walked along the beach, and in the afternoons we read books and swam. ") * 6
    pcm = espeak_pcm(speech_cache, text, wpm=150)
    assert len(pcm) >= 60 * 32000
    results = await recognise(offline, pcm[: 62 * 32000], chunk=1920, paced=False)
    assert results[-1].final and results[-1].refused and results[-1].text == ""


@module_loop
async def test_other_languages_are_refused_before_any_audio(offline: OfflineAsr) -> None:
    with pytest.raises(VoiceProviderError) as caught:
        await offline.start("zh-CN", "zh")
    assert caught.value.code == LANGUAGE_UNSUPPORTED


async def test_a_recogniser_that_fails_to_load_is_unavailable_then_retried(catalog: Catalog, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "no-model").mkdir()
    (tmp_path / "no-model" / "feat.params").write_text("-feat 1s_c_d_dd\n")
    (tmp_path / "no.dict").write_text("")
    broken = ModelFiles(tmp_path / "no-model", tmp_path / "no.dict")
    loads: list[int] = []

    def model() -> ModelFiles:
        loads.append(1)
        return broken

    engine = OfflineEngine(lambda: Site(1, catalog, lambda: SITE_NAMES), EngineSettings(retry_after_s=3600), model)
    provider = OfflineAsr(engine)
    try:
        for _ in range(2):
            with pytest.raises(VoiceProviderError) as caught:
                await provider.start("en")
            assert caught.value.code == PROVIDER_UNAVAILABLE and "offline recogniser" in caught.value.message
        builds = len(loads)
        with pytest.raises(VoiceProviderError):
            await provider.start("en")
        assert len(loads) == builds  # within retry_after_s nothing is tried again
        assert [r.message for r in caplog.records if r.levelname == "ERROR"][:1] == [
            next(r.message for r in caplog.records if "offline recogniser unavailable" in r.message)]
    finally:
        await provider.close()


def test_a_missing_pocketsphinx_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RecogniserUnavailable, match="pocketsphinx is not installed"):
        ModelFiles.packaged()


def test_packaged_model_is_found_without_importing_pocketsphinx() -> None:
    code = ("import sys; from deviceagentd.voice.recognizer.decoder import ModelFiles; m = ModelFiles.packaged(); "
            "print(m.acoustic_model.is_dir(), 'pocketsphinx' in sys.modules)")
    out = subprocess.run([".venv/bin/python" if Path(".venv/bin/python").exists() else "python3", "-c", code],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["True", "False"]


async def test_the_engine_unloads_when_nobody_talks_and_reloads_for_a_new_site(catalog: Catalog) -> None:
    version = [1]
    names = list(SITE_NAMES)
    engine = OfflineEngine(lambda: Site(version[0], catalog, lambda: names),
                           EngineSettings(unload_after_s=0.2, max_decoders=1))
    try:
        first = await engine.prepare()
        assert engine.loaded is first and engine.decoders == 1
        names.append(DeviceNames("light", ("Reading lamp",), ("study",)))
        version[0] = 2
        decoder = await engine.acquire()
        assert decoder.grammar is not first.grammar and decoder.grammar.automaton.accepts(
            ["turn", "on", "the", "study", "reading", "lamp"])
        engine.release(decoder)
        await asyncio.sleep(0.5)
        assert engine.loaded is None and engine.decoders == 0
    finally:
        await engine.close()


@module_loop
async def test_the_result_does_not_depend_on_how_the_audio_was_batched(offline: OfflineAsr,
                                                                       speech_cache: Path) -> None:
    # A loaded worker gets much audio in one go: that must decode exactly like 30 ms at a time
    # (big batches once turned "close the curtains" into a refusal).
    first = espeak_pcm(speech_cache, "what is the current temperature")
    pcm = espeak_pcm(speech_cache, "close the curtains")
    for session, paced in (("batching-paced", True), ("batching-whole", False)):
        await recognise(offline, first, session=session, paced=paced)  # the session's mean carries over
        results = await recognise(offline, pcm, session=session, paced=paced)
        assert results[-1] == AsrResult("close the curtains", final=True), session


# ---------------------------------------------------------------------------- the speaker's voice


def harmonic(pitch: float, seconds: float) -> np.ndarray:
    """A voiced sound: the pitch and its first overtones, as a vowel has them."""
    return sum((vs.sine(pitch * k, seconds, amplitude=6000.0 / k) for k in range(1, 6)), np.zeros(vs.samples(seconds)))


def test_the_pitch_of_a_voice_is_read_from_its_voiced_frames(speech_cache: Path) -> None:
    for pitch in (95.0, 140.0, 210.0, 300.0):
        signal = np.concatenate([vs.noise(0.3, 20.0), harmonic(pitch, 0.6), vs.noise(0.3, 20.0)])
        found = voice_pitch_hz(vs.pcm(signal))
        assert found is not None and abs(found - pitch) < 0.05 * pitch, (pitch, found)
    low = voice_pitch_hz(espeak_pcm(speech_cache, "what is the current temperature")[:32000])
    high = voice_pitch_hz(espeak_pcm(speech_cache, "what is the current temperature", voice="en-us+f3")[:32000])
    assert low is not None and 80 < low < 140
    assert high is not None and high > 180


def test_silence_noise_and_scraps_have_no_pitch() -> None:
    # (A whistle above the range of voices reads as one of its subharmonics: it only picks a warp.)
    for bad in (b"", b"\x01", vs.pcm(vs.silence(1.0)), vs.pcm(vs.noise(1.0, 3000.0)), vs.pcm(harmonic(200.0, 0.05))):
        assert voice_pitch_hz(bad) is None


def test_a_high_voice_is_warped_and_a_low_or_unknown_one_is_not() -> None:
    warp = WarpSettings(high_voice_hz=160.0, high_voice_warp=1.2)
    assert [warp.warp(p) for p in (None, 90.0, 159.0, 160.0, 230.0)] == [1.0, 1.0, 1.0, 1.2, 1.2]


@module_loop
async def test_each_utterance_is_decoded_with_the_warp_for_its_voice(offline: OfflineAsr, speech_cache: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    warps: list[float] = []
    original = decoder_module.GrammarDecoder.start

    def spy(self: decoder_module.GrammarDecoder, cmn: str | None = None, warp: float = 1.0) -> None:
        warps.append(warp)
        original(self, cmn, warp)

    monkeypatch.setattr(decoder_module.GrammarDecoder, "start", spy)
    said = "what is the current temperature"
    for voice in ("en-us+f3", "en-us", "en-us+f3"):
        results = await recognise(offline, espeak_pcm(speech_cache, said, voice=voice), session=f"warp-{voice}")
        assert results[-1] == AsrResult(said, final=True), voice
    assert warps == [1.2, 1.0, 1.2]
    # An utterance shorter than the pitch window is still decoded (the final result waits for nothing).
    short = espeak_pcm(speech_cache, "close the curtains", wpm=220)[:PITCH_BYTES - 3200]
    results = await recognise(offline, short, session="warp-short")
    assert results[-1].final


def test_a_word_held_far_longer_than_its_phones_take_is_refused() -> None:
    phones = {"aircon": 5, "on": 2, "to(2)": 2}
    said = [("<sil>", 0, 20), ("aircon", 21, 70), ("on", 71, 110), ("<sil>", 111, 180)]
    assert segmentation_problem(said, phones) == ""
    stretched = [("<sil>", 0, 20), ("aircon", 21, 90), ("on", 91, 190), ("<sil>", 191, 200)]
    assert "'on' was held for 1.0 s" in segmentation_problem(stretched, phones)
    # Each pronunciation counts its own phones; an unknown name counts as one phone.
    assert segmentation_problem([("to(2)", 0, 49)], phones) == ""
    assert segmentation_problem([("mystery", 0, 25)], phones) != ""


@module_loop
async def test_a_decoder_left_started_by_a_closed_stream_starts_again(offline: OfflineAsr, speech_cache: Path) -> None:
    # A stream closed while its decoder's start was still on a worker thread: abandon() can run
    # first, and the decoder goes back to the pool mid-utterance.
    decoder = await offline.engine.acquire()
    try:
        await offline.engine.run(decoder.start, None, 1.2)
    finally:
        offline.engine.release(decoder)
    results = await recognise(offline, espeak_pcm(speech_cache, "close the curtains"), session="left-started")
    # (A session's first utterance, without its cepstral mean yet: the plural may be lost.)
    assert results[-1].final and not results[-1].refused and results[-1].text.startswith("close the curtain")
