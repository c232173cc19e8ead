"""The offline recogniser: speech recognition on the gateway, with no network and no model
download, whose vocabulary is what this site can do.

- `grammar.py` builds the site's grammar (JSGF) from the DeviceSpecs, the devices' names and
  places, the rooms file's names and aliases and the local intent engine's generic phrasings;
- `numbers.py` says numbers as words and reads them back as digits;
- `pronounce.py` gives every word of the grammar a pronunciation (the CMU dictionary shipped with
  pocketsphinx; espeak-ng for words it lacks);
- `decoder.py` runs pocketsphinx on that grammar and decides whether what it heard was in it;
- `engine.py` shares decoders between sessions on a bounded worker pool, rebuilding the grammar
  when the site changes.

Nothing here is imported before a voice session uses the offline recogniser; pocketsphinx itself
is imported only by `decoder.py`.
"""
