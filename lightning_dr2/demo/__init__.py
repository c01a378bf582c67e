"""The local web demo (`make demo`): a Gradio page on 127.0.0.1 over the face pipeline and DR2E.

`models` finds what to run (released weights, else the newest quickstart run), `runner` loads and runs a
method on aligned crops, `handler` answers one request without a browser, `app` is the page, `examples`
renders the README's whole-photo examples. docs/demo.md describes it.
"""
