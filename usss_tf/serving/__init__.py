"""Serving an exported model: the embedded TF-Serving-API server and the gRPC client.

Production serving is TensorFlow Serving itself (``tensorflow_model_server``
on ``saved_models/``); ``usss-tf serve`` is the local default that speaks the
same gRPC and REST APIs over the same folder, and ``usss-tf predict`` is a
client on the official ``tensorflow-serving-api`` stubs that works against
either.

Modules: ``models`` (the versions on disk, loaded and watched),
``signatures`` (checking and running one signature), ``api`` (the TF Serving
operations on protos), ``grpc_service`` and ``rest`` (the two front ends),
``json_tensors`` (the REST JSON encoding), ``status`` (error codes),
``server`` (the whole server), ``client`` (the prediction client), and
``contract`` (what an export promises: signature names, files, limits,
defaults), which the exporter and the CLI read too.
"""
