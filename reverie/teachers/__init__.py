"""Teachers: the models that write the records (scene graph, chat API, local VLM, released data)."""
