"""Front model written by ast-serve repo (Triton Python backend): one whole photo per request, the
task's protocol and tiling applied here, the network run by the core model through BLS.

The code is the ast_deploy package's (installed in the server's Python without its dependencies);
the settings are this model's config.pbtxt parameters."""

from ast_deploy.serving.front import FrontModel as TritonPythonModel  # noqa: F401
