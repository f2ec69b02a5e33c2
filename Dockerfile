# dockertask's default runtime image: a Python of the host's major.minor and nothing else.
# Nothing of dockertask or cloudpickle is installed here: both are copied in with every task.
#
# BASE is python:X.Y-slim where a registry is reachable; without one, dockertask builds a
# Debian base with images/bootstrap-base.sh (debootstrap + docker import) and passes it in.
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1
# Fail the build, not the first task, when the base has no usable python3.
RUN python3 -c "import sys; print('python', sys.version)"
CMD ["python3"]
